# The address plan of one VPC: three tiers (public, private-app, private-persistence),
# one subnet per availability zone in each, as in the reference architecture.

variable "vpc_name" {
  type = string
}

variable "cidr_block" {
  type        = string
  description = "the VPC's range, like 10.0.0.0/18"
  validation {
    condition     = can(cidrhost(var.cidr_block, 0))
    error_message = "cidr_block must be a CIDR block like 10.0.0.0/18."
  }
}

variable "zones" {
  type    = number
  default = 3
}

variable "nat_gateways" {
  type    = number
  default = 1
}

locals {
  tiers = ["public", "private-app", "private-persistence"]
  # Each tier gets a /20 of the /18; each zone a /24 inside it.
  tier_cidrs = { for i, t in local.tiers : t => cidrsubnet(var.cidr_block, 2, i) }
  subnets = {
    for t in local.tiers : t => [for z in range(var.zones) : cidrsubnet(local.tier_cidrs[t], 4, z)]
  }
}

output "vpc_name" {
  value = var.vpc_name
}

output "cidr_block" {
  value = var.cidr_block
}

output "subnets" {
  value = local.subnets
}

output "nat_gateways" {
  value = var.nat_gateways
}
