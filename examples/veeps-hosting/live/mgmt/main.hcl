environment "mgmt" {}

locals {
  domain = "veeps-hosting.test"
}

module "vpc" {
  source     = "../../modules/vpc"
  name       = "mgmt"
  cidr_block = "10.10.0.0/18"
}

# Where stage's and prod's public certificates come from (see their main.hcl); declared
# here too, so that one `veeps up -var acme_directory=URL` reaches every environment.
variable "acme_directory" {
  type    = string
  default = null
}

variable "acme_ca_file" {
  type    = string
  default = null
}

# The one alarm topic of the deployment; stage and prod alarms notify it through
# mgmt's output. Add subscriptions here, for example:
#   subscription {
#     protocol = "email"   # or "webhook", "slack"
#     endpoint = "ops@veeps-hosting.test"
#   }
resource "topic" "alarms" {
  name = "alarms"
}

# The default alarms (CPU, memory, disk) for the machine veeps runs on; groups and
# database clusters declare the same module with their own metrics and labels.
module "host_alarms" {
  source   = "../../modules/alarms"
  name     = "host"
  labels   = { env = "system" }
  topic_id = topic.alarms.id
}

# The deployment's names. The public zone answers on veeps' DNS listener (delegate the
# domain to it); the private one inside mgmt's VPC and the VPCs associated with it (stage's
# and prod's), where the apps find the internal balancers and the databases by name.
resource "dns_zone" "public" {
  name = local.domain
}

resource "dns_zone" "private" {
  name = "veeps-hosting.internal"
  vpc {
    vpc_id = module.vpc.vpc_id
  }
}

output "public_zone_id" {
  value = dns_zone.public.zone_id
}

output "private_zone_id" {
  value = dns_zone.private.zone_id
}

output "private_domain" {
  value = dns_zone.private.name
}

output "alarm_topic_id" {
  value = topic.alarms.id
}

output "domain" {
  value = local.domain
}

output "vpc_name" {
  value = module.vpc.vpc_name
}

output "vpc_cidr" {
  value = module.vpc.cidr_block
}

output "vpc_id" {
  value = module.vpc.vpc_id
}

output "subnets" {
  value = module.vpc.subnets
}

# The static site: a bucket named after its domain, served through the CDN under that name
# with its own certificate (veeps' CA, or the ACME directory given), TTLs 0/30/60 s, and
# the bucket's error page for what is not there. `veeps up` prints its address.
locals {
  static_domain = "static.${local.domain}"
}

resource "bucket" "static" {
  bucket        = local.static_domain
  force_destroy = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Principal = "*", Action = "s3:GetObject", Resource = "arn:aws:s3:::${local.static_domain}/*" },
      { Effect = "Allow", Principal = "*", Action = "s3:ListBucket", Resource = "arn:aws:s3:::${local.static_domain}" },
    ]
  })
  website {
    index_document = "index.html"
    error_document = "error.html"
  }
}

resource "bucket_object" "static_index" {
  bucket       = bucket.static.id
  key          = "index.html"
  content_type = "text/html; charset=utf-8"
  content      = <<-HTML
    <!doctype html>
    <html lang="en">
    <head><meta charset="utf-8"><title>${local.domain}</title></head>
    <body>
      <h1>${local.domain}</h1>
      <p>Static content from the bucket ${local.static_domain}, served by veeps' CDN.</p>
    </body>
    </html>
  HTML
}

resource "bucket_object" "static_error" {
  bucket       = bucket.static.id
  key          = "error.html"
  content_type = "text/html; charset=utf-8"
  content      = <<-HTML
    <!doctype html>
    <html lang="en">
    <head><meta charset="utf-8"><title>Not found</title></head>
    <body><h1>Not found</h1><p>Nothing is at this address of ${local.static_domain}.</p></body>
    </html>
  HTML
}

resource "certificate" "static" {
  domain_name       = local.static_domain
  validation_method = var.acme_directory == null ? "internal" : "acme_dns"
  acme_directory    = var.acme_directory
  acme_ca_file      = var.acme_ca_file
}

resource "cdn_distribution" "static" {
  aliases             = [local.static_domain]
  default_root_object = "index.html"
  certificate_arn     = certificate.static.id
  comment             = "the static site"
  origin {
    origin_id   = "static-bucket"
    domain_name = bucket.static.website_endpoint
  }
  default_cache_behavior {
    target_origin_id       = "static-bucket"
    min_ttl                = 0
    default_ttl            = 30
    max_ttl                = 60
    compress               = true
    viewer_protocol_policy = "redirect-to-https"
  }
  custom_error_response {
    error_code         = 404
    response_code      = 404
    response_page_path = "/error.html"
  }
}

resource "dns_record" "static" {
  zone_id = dns_zone.public.zone_id
  name    = local.static_domain
  type    = "CNAME"
  ttl     = 300
  records = [cdn_distribution.static.domain_name]
}

output "static_url" {
  value = "https://${local.static_domain}/"
}

output "cdn_distribution_id" {
  value = cdn_distribution.static.id
}
