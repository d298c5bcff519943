environment "stage" {}

# mgmt's outputs: its VPC (peered with this one, admitted by its network ACLs).
data "environment" "mgmt" {
  name = "mgmt"
}

module "vpc" {
  source     = "../../modules/vpc"
  name       = "stage"
  cidr_block = "10.2.0.0/18"
  mgmt_cidr  = data.environment.mgmt.outputs.vpc_cidr
}

# mgmt is peered with each app environment.
resource "vpc_peering" "mgmt" {
  vpc_id      = data.environment.mgmt.outputs.vpc_id
  peer_vpc_id = module.vpc.vpc_id
}

module "db" {
  source       = "../../modules/db-credentials"
  cluster_name = "${module.vpc.vpc_name}-db"
}

locals {
  subnets = module.vpc.tier_subnet_ids
  # Stage's public balancer admits the office ranges only (and mgmt, for the VPN).
  office_cidrs = ["192.0.2.0/24", data.environment.mgmt.outputs.vpc_cidr]
  # Where `./run up` puts the sample apps' programs (relative to where veeps runs).
  app_dir = "target/sample-apps"
}

module "public_alb" {
  source        = "../../modules/alb"
  name          = "stage-public"
  vpc_id        = module.vpc.vpc_id
  subnet_ids    = local.subnets["public"]
  allowed_cidrs = local.office_cidrs
  domain_name   = "stage.${data.environment.mgmt.outputs.domain}"
  # https://127.0.0.1:8443/sample-app-frontend/... on the host running veeps.
  https_host_port = 8443
}

module "internal_alb" {
  source        = "../../modules/alb"
  name          = "stage-internal"
  internal      = true
  vpc_id        = module.vpc.vpc_id
  subnet_ids    = local.subnets["private-app"]
  allowed_cidrs = module.vpc.subnets["private-app"]
  domain_name   = "services-stage.veeps-hosting.internal"
}

module "database" {
  source                = "../../modules/db-cluster"
  name                  = module.db.cluster_name
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = local.subnets["private-persistence"]
  allowed_cidrs         = module.vpc.subnets["private-app"]
  instance_count        = 1
  backup_retention_days = 0
  master_username       = module.db.master_username
  master_password       = module.db.master_password
  topic_id              = data.environment.mgmt.outputs.alarm_topic_id
}

module "backend" {
  source                = "../../modules/asg-service"
  name                  = "sample-app-backend"
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = local.subnets["private-app"]
  instances             = 1
  app_dir               = local.app_dir
  lb_security_group_id  = module.internal_alb.security_group_id
  listener_arns         = module.internal_alb.listener_arns
  health_check_interval = 2
  topic_id              = data.environment.mgmt.outputs.alarm_topic_id
  environment = {
    DB_HOST     = module.database.endpoint
    DB_PORT     = "5432"
    DB_NAME     = module.database.database_name
    DB_USER     = module.db.master_username
    DB_PASSWORD = module.db.master_password
  }
}

module "frontend" {
  source                = "../../modules/asg-service"
  name                  = "sample-app-frontend"
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = local.subnets["private-app"]
  instances             = 2
  app_dir               = local.app_dir
  lb_security_group_id  = module.public_alb.security_group_id
  listener_arns         = module.public_alb.listener_arns
  health_check_interval = 2
  topic_id              = data.environment.mgmt.outputs.alarm_topic_id
  environment = {
    BACKEND_URL = module.internal_alb.url
  }
}

output "public_url" {
  value = "https://127.0.0.1:8443/sample-app-frontend"
}

# What `veeps up` waits for: the whole path (public balancer, frontend, internal balancer,
# backend, database) answering.
output "check_url" {
  value = "https://127.0.0.1:8443/sample-app-frontend/service/db"
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

output "vpc_name" {
  value = module.vpc.vpc_name
}

output "vpc_cidr" {
  value = module.vpc.cidr_block
}

output "subnets" {
  value = module.vpc.subnets
}

output "peer_cidr" {
  value = data.environment.mgmt.outputs.vpc_cidr
}

output "db_master_username" {
  value = module.db.master_username
}

output "db_master_password" {
  value     = module.db.master_password
  sensitive = true
}
