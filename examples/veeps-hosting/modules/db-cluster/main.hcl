# The data store of the reference architecture: a PostgreSQL cluster in private-persistence
# subnets, reachable only from the ranges given (private-app), with the reference's alarms
# (connections above 100; CPU, memory and disk through the alarms module).

variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "allowed_cidrs" {
  type = list(string)
}

variable "instance_count" {
  type = number
}

variable "backup_retention_days" {
  type = number
}

variable "database_name" {
  type    = string
  default = "app"
}

variable "master_username" {
  type = string
}

variable "master_password" {
  type      = string
  sensitive = true
}

variable "topic_id" {
  type = string
}

variable "dns_names" {
  type        = list(string)
  default     = []
  description = "names clients connect by (on the nodes' certificates)"
}

resource "security_group" "db" {
  vpc_id = var.vpc_id
  ingress {
    protocol    = "tcp"
    from_port   = 5432
    to_port     = 5432
    cidr_blocks = var.allowed_cidrs
  }
}

resource "db_cluster" "this" {
  name                  = var.name
  instance_count        = var.instance_count
  subnets               = var.subnet_ids
  security_groups       = [security_group.db.id]
  database_name         = var.database_name
  master_username       = var.master_username
  master_password       = var.master_password
  backup_retention_days = var.backup_retention_days
  synchronous_replicas  = var.instance_count > 1 ? 1 : 0
  memory                = 256
  dns_names             = var.dns_names
}

resource "alarm" "connections" {
  name                = "${var.name}-connections-high"
  description         = "More than 100 connections"
  metric              = "db_connections"
  labels              = { cluster = var.name }
  statistic           = "max"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 100
  treat_missing_data  = "missing"
  alarm_actions       = [var.topic_id]
  ok_actions          = [var.topic_id]
}

module "alarms" {
  source   = "../alarms"
  name     = var.name
  labels   = { env = "system" }
  topic_id = var.topic_id
}

output "endpoint" {
  value = db_cluster.this.endpoint
}

output "reader_endpoint" {
  value = db_cluster.this.reader_endpoint
}

output "port" {
  value = 5432
}

output "database_name" {
  value = var.database_name
}
