environment "mgmt" {}

locals {
  domain = "veeps-hosting.test"
}

module "vpc" {
  source     = "../../modules/vpc"
  name       = "mgmt"
  cidr_block = "10.10.0.0/18"
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
