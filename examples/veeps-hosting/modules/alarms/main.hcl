# The reference architecture's default alarms for one set of servers (a group's
# instances, a database cluster's nodes, or the host), all to one alarm topic:
# CPU > 90 % for 300 s, free memory < 100 MB for 300 s, free disk < 1 GB for 60 s.
# Declare it once per set; the metric names and labels say which servers it watches.

variable "name" {
  type        = string
  description = "Prefix of the alarms' names, like the group's name"
}

variable "labels" {
  type        = map(string)
  default     = {}
  description = "Labels selecting the servers' series; env = \"system\" watches the host"
}

variable "topic_id" {
  type        = string
  description = "The alarm topic that hears every transition"
}

variable "cpu_metric" {
  type    = string
  default = "host_cpu_usage_percent"
}

variable "memory_free_metric" {
  type    = string
  default = "host_memory_available_bytes"
}

variable "disk_free_metric" {
  type    = string
  default = "host_disk_free_bytes"
}

resource "alarm" "cpu" {
  name                = "${var.name}-cpu-high"
  description         = "CPU above 90 % for 5 minutes"
  metric              = var.cpu_metric
  labels              = var.labels
  statistic           = "avg"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = 90
  treat_missing_data  = "missing"
  alarm_actions       = [var.topic_id]
  ok_actions          = [var.topic_id]
}

resource "alarm" "memory" {
  name                = "${var.name}-memory-low"
  description         = "Less than 100 MB of free memory for 5 minutes"
  metric              = var.memory_free_metric
  labels              = var.labels
  statistic           = "min"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 100 * 1000 * 1000
  treat_missing_data  = "missing"
  alarm_actions       = [var.topic_id]
  ok_actions          = [var.topic_id]
}

resource "alarm" "disk" {
  name                = "${var.name}-disk-low"
  description         = "Less than 1 GB of free disk for a minute"
  metric              = var.disk_free_metric
  labels              = var.labels
  statistic           = "min"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = 1000 * 1000 * 1000
  treat_missing_data  = "missing"
  alarm_actions       = [var.topic_id]
  ok_actions          = [var.topic_id]
}

output "alarm_names" {
  value = [alarm.cpu.name, alarm.memory.name, alarm.disk.name]
}
