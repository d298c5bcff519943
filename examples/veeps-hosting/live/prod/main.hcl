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
