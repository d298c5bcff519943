# A VPC with the reference architecture's three tiers (public, private-app,
# private-persistence), one subnet per availability zone in each; the persistence tier is
# guarded by a network ACL that admits only this VPC and the ranges given (mgmt).

variable "name" {
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

variable "mgmt_cidr" {
  type        = string
  default     = ""
  description = "the mgmt VPC's range, admitted by the persistence tier (empty in mgmt itself)"
}

locals {
  tiers = ["public", "private-app", "private-persistence"]
  # Each tier gets a /20 of the /18; each zone a /24 inside it.
  subnets = merge([
    for i, t in local.tiers : {
      for z in range(var.zones) : "${t}-${z}" => { tier = t, cidr = cidrsubnet(cidrsubnet(var.cidr_block, 2, i), 4, z) }
    }
  ]...)
  mgmt = var.mgmt_cidr == "" ? var.cidr_block : var.mgmt_cidr
}

resource "vpc" "this" {
  cidr_block = var.cidr_block
  name       = var.name
}

resource "subnet" "this" {
  for_each   = local.subnets
  vpc_id     = vpc.this.id
  cidr_block = each.value.cidr
  tier       = each.value.tier
  name       = "${var.name}-${each.key}"
}

resource "network_acl" "persistence" {
  vpc_id     = vpc.this.id
  subnet_ids = [for k, s in subnet.this : s.id if local.subnets[k].tier == "private-persistence"]

  # Stateless, like AWS network ACLs: both directions are listed.
  ingress {
    rule_no    = 100
    action     = "allow"
    protocol   = "all"
    cidr_block = var.cidr_block
  }
  ingress {
    rule_no    = 110
    action     = "allow"
    protocol   = "all"
    cidr_block = local.mgmt
  }
  egress {
    rule_no    = 100
    action     = "allow"
    protocol   = "all"
    cidr_block = var.cidr_block
  }
  egress {
    rule_no    = 110
    action     = "allow"
    protocol   = "all"
    cidr_block = local.mgmt
  }
}

output "vpc_id" {
  value = vpc.this.id
}

output "vpc_name" {
  value = vpc.this.name
}

output "cidr_block" {
  value = vpc.this.cidr_block
}

output "subnet_ids" {
  value = { for k, s in subnet.this : k => s.id }
}

output "subnets" {
  value = { for t in local.tiers : t => [for k, v in local.subnets : v.cidr if v.tier == t] }
}

output "tier_subnet_ids" {
  value = { for t in local.tiers : t => [for k, s in subnet.this : s.id if local.subnets[k].tier == t] }
}
