"""A preprocessing script for the SageMaker Processing container contract ('prepflow init').

It runs unchanged on SageMaker and under prepflow's local runner:

    prepflow run --script preprocessing_script.py employees.csv

The job's inputs are staged in /opt/ml/processing/input, and whatever the script writes to
/opt/ml/processing/output becomes the job's output. This one keeps the rows of every CSV
input that have no empty field and adds a processed_timestamp column. Exit code 0 marks the
job Completed; any other marks it Failed with the end of stderr as its reason.
"""

import csv
import json
import os
import sys
from datetime import UTC, datetime

INPUT_DIR = "/opt/ml/processing/input"
OUTPUT_DIR = "/opt/ml/processing/output"
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
# SageMaker reports the first 1 KB of this file as the job's ExitMessage; prepflow reads row
# counts from it.
MESSAGE_FILE = "/opt/ml/output/message"


def process(source: str, target: str, timestamp: str) -> tuple[int, int]:
    """Copy the complete rows of ``source`` to ``target``; return (rows read, rows written)."""
    rows_in = rows_out = 0
    with (
        open(source, newline="", encoding="utf-8") as infile,
        open(target, "w", newline="", encoding="utf-8") as outfile,
    ):
        reader = csv.reader(infile)
        writer = csv.writer(outfile, lineterminator="\n")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{source} is empty: expected a header row")
        writer.writerow([*header, "processed_timestamp"])
        for row in reader:
            rows_in += 1
            if len(row) == len(header) and all(value.strip() for value in row):
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


def main() -> int:
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    totals = {"rows_in": 0, "rows_out": 0}
    names = sorted(name for name in os.listdir(INPUT_DIR) if name.lower().endswith(".csv"))
    if not names:
        if other_hosts_exist():
            # Sharded by key, some hosts may get no files: that is not an error.
            note = f"no CSV files in {INPUT_DIR} on this host; nothing to do"
            print(note, file=sys.stderr)
            return 0
        print(f"no CSV files in {INPUT_DIR}", file=sys.stderr)
        return 1
    for name in names:
        target = os.path.join(OUTPUT_DIR, "processed_" + name)
        rows_in, rows_out = process(os.path.join(INPUT_DIR, name), target, timestamp)
        print(f"{name}: {rows_in} rows in, {rows_out} rows out")
        totals["rows_in"] += rows_in
        totals["rows_out"] += rows_out
    if os.path.isdir(os.path.dirname(MESSAGE_FILE)):
        with open(MESSAGE_FILE, "w", encoding="utf-8") as message:
            json.dump(totals, message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
