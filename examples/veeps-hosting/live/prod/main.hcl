environment "prod" {}

# mgmt is peered with this environment and admitted by its network ACLs.
data "environment" "mgmt" {
  name = "mgmt"
}

module "vpc" {
  source       = "../../modules/network-plan"
  vpc_name     = "prod"
  cidr_block   = "10.0.0.0/18"
  nat_gateways = 3
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
