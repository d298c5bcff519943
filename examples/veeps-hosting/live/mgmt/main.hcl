environment "mgmt" {}

locals {
  domain = "veeps-hosting.test"
}

module "vpc" {
  source     = "../../modules/vpc"
  name       = "mgmt"
  cidr_block = "10.10.0.0/18"
}

# Where stage's and prod's public certificates come from (see their main.hcl); declared
# here too, so that one `veeps up -var acme_directory=URL` reaches every environment.
variable "acme_directory" {
  type    = string
  default = null
}

variable "acme_ca_file" {
  type    = string
  default = null
}

# The one alarm topic of the deployment; stage and prod alarms notify it through
# mgmt's output. Add subscriptions here, for example:
#   subscription {
#     protocol = "email"   # or "webhook", "slack"
#     endpoint = "ops@veeps-hosting.test"
#   }
resource "topic" "alarms" {
  name = "alarms"
}

# The default alarms (CPU, memory, disk) for the machine veeps runs on; groups and
# database clusters declare the same module with their own metrics and labels.
module "host_alarms" {
  source   = "../../modules/alarms"
  name     = "host"
  labels   = { env = "system" }
  topic_id = topic.alarms.id
}

# The deployment's names. The public zone answers on veeps' DNS listener (delegate the
# domain to it); the private one inside mgmt's VPC and the VPCs associated with it (stage's
# and prod's), where the apps find the internal balancers and the databases by name.
resource "dns_zone" "public" {
  name = local.domain
}

resource "dns_zone" "private" {
  name = "veeps-hosting.internal"
  vpc {
    vpc_id = module.vpc.vpc_id
  }
}

output "public_zone_id" {
  value = dns_zone.public.zone_id
}

output "private_zone_id" {
  value = dns_zone.private.zone_id
}

output "private_domain" {
  value = dns_zone.private.name
}

output "alarm_topic_id" {
  value = topic.alarms.id
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
