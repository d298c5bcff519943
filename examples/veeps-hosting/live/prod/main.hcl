environment "prod" {}

# mgmt's outputs: its VPC (peered with this one, admitted by its network ACLs).
data "environment" "mgmt" {
  name = "mgmt"
}

module "vpc" {
  source     = "../../modules/vpc"
  name       = "prod"
  cidr_block = "10.0.0.0/18"
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
  # Where `./run up` puts the sample apps' programs (relative to where veeps runs).
  app_dir = "target/sample-apps"
}

# Prod's public balancer admits everyone; on the host it answers on 9443.
module "public_alb" {
  source          = "../../modules/alb"
  name            = "prod-public"
  vpc_id          = module.vpc.vpc_id
  subnet_ids      = local.subnets["public"]
  allowed_cidrs   = ["0.0.0.0/0"]
  domain_name     = data.environment.mgmt.outputs.domain
  https_host_port = 9443
}

module "internal_alb" {
  source        = "../../modules/alb"
  name          = "prod-internal"
  internal      = true
  vpc_id        = module.vpc.vpc_id
  subnet_ids    = local.subnets["private-app"]
  allowed_cidrs = module.vpc.subnets["private-app"]
  domain_name   = "services-prod.veeps-hosting.internal"
}

module "database" {
  source                = "../../modules/db-cluster"
  name                  = module.db.cluster_name
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = local.subnets["private-persistence"]
  allowed_cidrs         = module.vpc.subnets["private-app"]
  instance_count        = 2
  backup_retention_days = 21
  master_username       = module.db.master_username
  master_password       = module.db.master_password
  topic_id              = data.environment.mgmt.outputs.alarm_topic_id
}

module "backend" {
  source                = "../../modules/asg-service"
  name                  = "sample-app-backend"
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = local.subnets["private-app"]
  instances             = 3
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
  instances             = 3
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
  value = "https://127.0.0.1:9443/sample-app-frontend"
}

output "check_url" {
  value = "https://127.0.0.1:9443/sample-app-frontend/service/db"
}

output "db_endpoint" {
  value = module.database.endpoint
}

output "db_reader_endpoint" {
  value = module.database.reader_endpoint
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
