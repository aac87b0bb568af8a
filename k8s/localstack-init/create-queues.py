"""LocalStack init hook (ready stage): create the demo queue and its dead-letter queue.

LocalStack runs `.py` hooks in /etc/localstack/init/ready.d/ inside its own Python, which has boto3.
The app would create them too on first use; creating them here means they exist before any consumer.
"""

import json
import os

import boto3

queue_name = os.environ.get("QUEUE_NAME", "sample-queue")
max_receive_count = os.environ.get("MAX_RECEIVE_COUNT", "5")
sqs = boto3.client(
    "sqs",
    endpoint_url=os.environ.get("INIT_SQS_ENDPOINT", "http://localhost:4566"),
    region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
fifo = queue_name.endswith(".fifo")
fifo_attributes = {"FifoQueue": "true"} if fifo else {}
dlq_name = f"{queue_name[:-5]}-dlq.fifo" if fifo else f"{queue_name}-dlq"
dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=fifo_attributes)["QueueUrl"]
dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
queue_url = sqs.create_queue(QueueName=queue_name, Attributes={**fifo_attributes, "RedrivePolicy": redrive})["QueueUrl"]
print(f"created {queue_url} with dead-letter queue {dlq_url}")
