"""Reference preprocessing as a user script: drop rows with a missing value, add a timestamp.

Written for the SageMaker Processing container contract, so it runs unchanged on SageMaker
and under prepflow's local runner (``prepflow run --script`` mounts it at
/opt/ml/processing/input/code). It reads every CSV file in /opt/ml/processing/input and
writes ``processed_<name>`` to /opt/ml/processing/output. It uses only the standard library;
the processing image also has pandas and scikit-learn for scripts that want them.

A value counts as missing when pandas.read_csv would read it as missing by default, so this
script drops the same rows as the pandas version it replaces. Kept values are written as read.
"""

import csv
import json
import os
import sys
from datetime import datetime, timezone

INPUT_DIR = "/opt/ml/processing/input"
OUTPUT_DIR = "/opt/ml/processing/output"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
# SageMaker returns the first 1 KB of this file as the job's ExitMessage.
MESSAGE_FILE = "/opt/ml/output/message"
MISSING = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}


def process(source, target, timestamp):
    """Copy complete rows of ``source`` to ``target``; return (rows read, rows written)."""
    rows_in = rows_out = 0
    with open(source, newline="", encoding="utf-8") as infile, \
            open(target, "w", newline="", encoding="utf-8") as outfile:
        reader = csv.reader(infile)
        writer = csv.writer(outfile, lineterminator="\n")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{source} is empty: expected a header row")
        writer.writerow([*header, "processed_timestamp"])
        for row in reader:
            if not row:
                continue  # pandas skips blank lines too
            rows_in += 1
            if len(row) == len(header) and not any(value in MISSING for value in row):
                writer.writerow([*row, timestamp])
                rows_out += 1
    return rows_in, rows_out


def other_hosts_exist() -> bool:
    """Tell whether the job runs on several instances, where a host's share may be empty."""
    try:
        with open(RESOURCE_CONFIG, encoding="utf-8") as config:
            return len(json.load(config).get("hosts", [])) > 1
    except (OSError, ValueError):
        return False


def main():
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    timestamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    timestamp = timestamp.replace("+00:00", "Z")
    totals = {"rows_in": 0, "rows_out": 0, "files": 0}
    for name in sorted(os.listdir(INPUT_DIR)):
        source = os.path.join(INPUT_DIR, name)
        if not (os.path.isfile(source) and name.lower().endswith(".csv")):
            continue  # the code folder and anything that is not CSV
        rows_in, rows_out = process(source, os.path.join(OUTPUT_DIR, "processed_" + name), timestamp)
        print(f"{name}: {rows_in} rows in, {rows_out} rows out")
        totals["rows_in"] += rows_in
        totals["rows_out"] += rows_out
        totals["files"] += 1
    if totals["files"] == 0:
        if other_hosts_exist():
            # Sharded by key, some hosts may get no files: that is not an error.
            note = f"no CSV files in {INPUT_DIR} on this host; nothing to do"
            print(note, file=sys.stderr)
            return 0
        print(f"no CSV files in {INPUT_DIR}", file=sys.stderr)
        return 1
    if os.path.isdir(os.path.dirname(MESSAGE_FILE)):
        with open(MESSAGE_FILE, "w", encoding="utf-8") as message:
            json.dump(totals, message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
