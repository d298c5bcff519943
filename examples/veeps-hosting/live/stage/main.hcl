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

# mgmt's private zone answers in this VPC too.
resource "dns_zone_association" "private" {
  zone_id = data.environment.mgmt.outputs.private_zone_id
  vpc_id  = module.vpc.vpc_id
}

module "db" {
  source       = "../../modules/db-credentials"
  cluster_name = "${module.vpc.vpc_name}-db"
}

locals {
  # Stage's public balancer admits the office ranges only (and mgmt, for the VPN).
  office_cidrs = ["192.0.2.0/24", data.environment.mgmt.outputs.vpc_cidr]
  # Where `./run up` puts the sample apps' programs (relative to where veeps runs).
  app_dir = "target/sample-apps"
}

# The public balancer's wildcard certificate comes from veeps' CA unless an ACME directory
# is given (`veeps up -var acme_directory=URL`): then from that CA, through DNS-01 answered
# by the public zone, which must be delegated to veeps.
variable "acme_directory" {
  type    = string
  default = null
}

variable "acme_ca_file" {
  type    = string
  default = null
}

# The balancers, the sample apps and the database, with stage's figures. The public
# balancer also answers on the host: https://127.0.0.1:8443/sample-app-frontend
module "apps" {
  source                   = "../../modules/app-environment"
  name                     = "stage"
  vpc_id                   = module.vpc.vpc_id
  tier_subnet_ids          = module.vpc.tier_subnet_ids
  tier_cidrs               = module.vpc.subnets
  public_allowed_cidrs     = local.office_cidrs
  public_domain            = "stage.${data.environment.mgmt.outputs.domain}"
  public_host_port         = 8443
  frontend_instances       = 2
  backend_instances        = 1
  db_cluster_name          = module.db.cluster_name
  db_instance_count        = 1
  db_backup_retention_days = 0
  db_master_username       = module.db.master_username
  db_master_password       = module.db.master_password
  app_dir                  = local.app_dir
  topic_id                 = data.environment.mgmt.outputs.alarm_topic_id
  public_zone_id           = data.environment.mgmt.outputs.public_zone_id
  private_zone_id          = dns_zone_association.private.zone_id
  private_domain           = data.environment.mgmt.outputs.private_domain
  acme_directory           = var.acme_directory
  acme_ca_file             = var.acme_ca_file
}

# The example function (s3-image-processing), with its bucket and role.
module "images" {
  source  = "../../modules/image-function"
  name    = "stage"
  app_dir = local.app_dir
}

output "image_function" {
  value = module.images.function_name
}

output "images_bucket" {
  value = module.images.bucket
}

# The password of the balancer's /ops/ door (user "ops").
output "ops_password" {
  value     = module.apps.ops_password
  sensitive = true
}

output "public_url" {
  value = module.apps.public_url
}

# What `veeps up` waits for: the whole path (public balancer, frontend, internal balancer,
# backend, database) answering.
output "check_url" {
  value = module.apps.check_url
}

output "internal_alb_url" {
  value = module.apps.internal_alb_url
}

output "db_endpoint" {
  value = module.apps.db_endpoint
}

output "db_reader_endpoint" {
  value = module.apps.db_reader_endpoint
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
