"""prepflow's AWS deployment as an AWS CDK v2 app: one construct per logical unit.

``app.py`` contains what differs per environment, ``stack.py`` assembles the units, and
``synth.py`` writes the CloudFormation templates without the CDK command line.
"""

import os

# Importing aws_cdk starts Node through jsii, which prints a long end-of-life notice on Node 20
# unless this is set. The notice is about Node's support dates only.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
