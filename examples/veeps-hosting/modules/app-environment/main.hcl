# Everything an app environment (stage, prod) runs on its VPC: a public and an internal
# balancer, the two sample app services on them, and the PostgreSQL cluster the backend
# uses. The live configuration of each environment gives the figures.

variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "tier_subnet_ids" {
  type        = map(list(string))
  description = "subnet ids by tier (the vpc module's tier_subnet_ids)"
}

variable "tier_cidrs" {
  type        = map(list(string))
  description = "subnet ranges by tier (the vpc module's subnets)"
}

variable "public_allowed_cidrs" {
  type = list(string)
}

variable "public_domain" {
  type = string
}

variable "public_host_port" {
  type        = number
  description = "the host port (127.0.0.1) the public balancer also answers HTTPS on"
}

variable "frontend_instances" {
  type = number
}

variable "backend_instances" {
  type = number
}

variable "db_instance_count" {
  type = number
}

variable "db_backup_retention_days" {
  type = number
}

variable "db_cluster_name" {
  type = string
}

variable "db_master_username" {
  type = string
}

variable "db_master_password" {
  type      = string
  sensitive = true
}

variable "app_dir" {
  type        = string
  description = "where the sample apps' programs are (relative to where veeps runs)"
}

variable "frontend_app_dir" {
  type        = string
  default     = null
  description = "another place for the frontend's program (a new release), app_dir when null"
}

variable "topic_id" {
  type = string
}

variable "public_zone_id" {
  type        = string
  description = "the public zone the public balancer gets its name in (public_domain)"
}

variable "private_zone_id" {
  type        = string
  description = "the private zone (answered in this VPC) the internal balancer and the database get names in"
}

variable "acme_directory" {
  type        = string
  default     = null
  description = "get the public balancer's wildcard certificate from this ACME directory instead of veeps' CA"
}

variable "acme_ca_file" {
  type    = string
  default = null
}

variable "private_domain" {
  type = string
}

locals {
  services_name = "services-${var.name}.${var.private_domain}"
  db_name       = "db-${var.name}.${var.private_domain}"
}

module "public_alb" {
  source          = "../alb"
  name            = "${var.name}-public"
  vpc_id          = var.vpc_id
  subnet_ids      = var.tier_subnet_ids["public"]
  allowed_cidrs   = var.public_allowed_cidrs
  domain_name     = var.public_domain
  https_host_port = var.public_host_port
  wildcard        = true
  acme_directory  = var.acme_directory
  acme_ca_file    = var.acme_ca_file
}

module "internal_alb" {
  source        = "../alb"
  name          = "${var.name}-internal"
  internal      = true
  vpc_id        = var.vpc_id
  subnet_ids    = var.tier_subnet_ids["private-app"]
  allowed_cidrs = var.tier_cidrs["private-app"]
  domain_name   = local.services_name
}

module "database" {
  source                = "../db-cluster"
  name                  = var.db_cluster_name
  vpc_id                = var.vpc_id
  subnet_ids            = var.tier_subnet_ids["private-persistence"]
  allowed_cidrs         = var.tier_cidrs["private-app"]
  instance_count        = var.db_instance_count
  backup_retention_days = var.db_backup_retention_days
  master_username       = var.db_master_username
  master_password       = var.db_master_password
  topic_id              = var.topic_id
  dns_names             = [local.db_name, "db-${var.name}-ro.${var.private_domain}"]
}

# Names: the public balancer in the public zone; the internal balancer and the database's
# endpoints in the private one. Aliases follow the balancers; the endpoints are addresses
# that move with the writer and over the readers.
resource "dns_record" "public" {
  zone_id = var.public_zone_id
  name    = var.public_domain
  type    = "A"
  alias {
    name                   = module.public_alb.arn
    evaluate_target_health = false
  }
}

resource "dns_record" "services" {
  zone_id = var.private_zone_id
  name    = local.services_name
  type    = "A"
  alias {
    name                   = module.internal_alb.arn
    evaluate_target_health = false
  }
}

resource "dns_record" "db" {
  zone_id = var.private_zone_id
  name    = local.db_name
  type    = "A"
  ttl     = 5
  records = [module.database.endpoint]
}

resource "dns_record" "db_reader" {
  zone_id = var.private_zone_id
  name    = "db-${var.name}-ro.${var.private_domain}"
  type    = "A"
  ttl     = 5
  records = [module.database.reader_endpoint]
}

# Health checks every 2 s (the module's default is the reference's 10 s), so the example
# comes up fast.
module "backend" {
  source                = "../asg-service"
  name                  = "sample-app-backend"
  vpc_id                = var.vpc_id
  subnet_ids            = var.tier_subnet_ids["private-app"]
  instances             = var.backend_instances
  app_dir               = var.app_dir
  lb_security_group_id  = module.internal_alb.security_group_id
  listener_arns         = module.internal_alb.listener_arns
  health_check_interval = 2
  topic_id              = var.topic_id
  environment = {
    # By name, through the VPC's resolver: the writer's name follows failover.
    DB_HOST = dns_record.db.fqdn
    DB_PORT = "5432"
    DB_NAME = module.database.database_name
    DB_USER = var.db_master_username
  }
  # The generated password reaches the backend sealed: decrypted only when an instance
  # starts. A password a team commits would be a `veeps kms encrypt` value here.
  secrets = {
    DB_PASSWORD = var.db_master_password
  }
}

module "frontend" {
  source                = "../asg-service"
  name                  = "sample-app-frontend"
  vpc_id                = var.vpc_id
  subnet_ids            = var.tier_subnet_ids["private-app"]
  instances             = var.frontend_instances
  app_dir               = coalesce(var.frontend_app_dir, var.app_dir)
  lb_security_group_id  = module.public_alb.security_group_id
  listener_arns         = module.public_alb.listener_arns
  health_check_interval = 2
  topic_id              = var.topic_id
  environment = {
    # The internal balancer by its private name (on its certificate too).
    BACKEND_URL = "https://${dns_record.services.fqdn}:443"
  }
}

# One Rust function (on the lambda_runtime crate) behind the public balancer's
# /hello-function path: https://127.0.0.1:8443/hello-function
resource "function" "hello" {
  name    = "hello-function-${var.name}"
  code    = "${var.app_dir}/sample-fn-echo"
  runtime = "provided.al2023"
}

resource "target_group" "hello" {
  name        = "${var.name}-hello-function"
  target_type = "lambda"
  function    = function.hello.name
}

resource "listener_rule" "hello" {
  count        = length(module.public_alb.listener_arns)
  listener_arn = module.public_alb.listener_arns[count.index]
  priority     = 50
  condition {
    path_pattern {
      values = ["/hello-function*"]
    }
  }
  action {
    type             = "forward"
    target_group_arn = target_group.hello.arn
  }
}

# The operators' door: the same function at /ops/..., behind HTTP Basic authentication
# (user "ops", its password generated: `veeps output ENV ops_password`). The balancer keeps
# only an argon2id hash of it; wrong passwords count toward the ban policy below.
resource "random_password" "ops" {
  length  = 24
  special = false
}

resource "listener_rule" "ops" {
  count        = length(module.public_alb.listener_arns)
  listener_arn = module.public_alb.listener_arns[count.index]
  priority     = 40
  condition {
    path_pattern {
      values = ["/ops/*"]
    }
  }
  action {
    type             = "forward"
    target_group_arn = target_group.hello.arn
    authenticate_basic {
      realm = "${var.name} operators"
      users = { ops = random_password.ops.result }
    }
  }
}

# Five wrong passwords at this environment's balancers within 10 minutes ban the address
# for 10 minutes (doubled for each earlier ban, up to a day), in the kernel.
resource "ban_policy" "balancers" {
  name = "balancers"
  jail {
    source       = "lb"
    max_retry    = 5
    find_time    = 600
    ban_time     = 600
    max_ban_time = 86400
  }
}

output "ops_password" {
  value     = random_password.ops.result
  sensitive = true
}

output "public_url" {
  value = "https://127.0.0.1:${var.public_host_port}/sample-app-frontend"
}

output "check_url" {
  value = "https://127.0.0.1:${var.public_host_port}/sample-app-frontend/service/db"
}

output "public_alb_address" {
  value = module.public_alb.address
}

output "internal_alb_url" {
  value = module.internal_alb.url
}

output "db_endpoint" {
  value = module.database.endpoint
}

output "db_reader_endpoint" {
  value = module.database.reader_endpoint
}
