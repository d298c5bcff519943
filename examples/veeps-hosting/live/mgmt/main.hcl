environment "mgmt" {}

locals {
  domain = "veeps-hosting.test"
}

module "vpc" {
  source       = "../../modules/network-plan"
  vpc_name     = "mgmt"
  cidr_block   = "10.10.0.0/18"
  nat_gateways = 1
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

output "subnets" {
  value = module.vpc.subnets
}
