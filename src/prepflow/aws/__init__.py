"""prepflow on AWS: adapters of the ports to S3, DynamoDB, SageMaker, SNS and CloudWatch Logs,
and the Lambda entry points.

Clients are built at the edge (``clients.aws_clients``, the handlers, the CLI) and passed to
the adapters, so tests give them moto's or a Stubber's clients. Each adapter translates AWS
errors into prepflow's own (``prepflow.errors``) and keeps the cause. Nothing here imports
polars or the processing engine: the Lambda bundle ships without them.
"""
