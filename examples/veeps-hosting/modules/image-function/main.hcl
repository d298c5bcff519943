# The reference's example function, s3-image-processing: reads an image from a bucket and
# answers it base64-encoded (timeout 30 s, memory 128 MB), in Python under Lambda's
# runtime interface client. It runs as a role that may read its bucket only.

variable "name" {
  type        = string
  description = "The environment's name (buckets, roles and functions are named after it)"
}

variable "app_dir" {
  type        = string
  description = "Where the function's code is staged (relative to where veeps runs)"
}

resource "bucket" "images" {
  bucket        = "veeps-images-${var.name}"
  force_destroy = true
}

resource "bucket_object" "sample" {
  bucket       = bucket.images.bucket
  key          = "veeps.gif"
  source       = "${var.app_dir}/s3-image-processing/veeps.gif"
  content_type = "image/gif"
}

resource "iam_policy" "read_images" {
  name = "read-images-${var.name}"
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = "s3:GetObject"
      Resource = "arn:aws:s3:::${bucket.images.bucket}/*"
    }]
  })
}

resource "iam_role" "function" {
  name     = "s3-image-processing-${var.name}"
  policies = [iam_policy.read_images.name]
}

resource "function" "s3_image_processing" {
  name    = "s3-image-processing-${var.name}"
  code    = "${var.app_dir}/s3-image-processing"
  runtime = "python3.11"
  handler = "app.handler"
  memory  = 128
  timeout = 30
  role    = iam_role.function.name
}

output "function_name" {
  value = function.s3_image_processing.name
}

output "bucket" {
  value = bucket.images.bucket
}
