"""The reference's s3-image-processing function: the image an event names, read from its
bucket and answered base64-encoded. Its code holds no keys: boto3 finds the function's
role's credentials and veeps' endpoint (AWS_ENDPOINT_URL) in its environment.

Event: {"s3_bucket": "...", "image_filename": "..."}
"""
import base64

import boto3

s3 = boto3.client("s3")


def handler(event, context):
    obj = s3.get_object(Bucket=event["s3_bucket"], Key=event["image_filename"])
    return {
        "statusCode": 200,
        "headers": {"Content-Type": obj.get("ContentType", "application/octet-stream")},
        "body": base64.b64encode(obj["Body"].read()).decode(),
        "isBase64Encoded": True,
    }
