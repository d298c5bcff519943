# The master credentials of a database cluster: a generated password, kept encrypted in
# state and masked everywhere.

variable "cluster_name" {
  type = string
}

variable "master_username" {
  type    = string
  default = "veeps"
}

resource "random_password" "master" {
  length  = 32
  special = false
}

output "master_username" {
  value = var.master_username
}

output "master_password" {
  value     = random_password.master.result
  sensitive = true
}

output "cluster_name" {
  value = var.cluster_name
}
