# An app service of the reference architecture: its image, a launch template, an auto
# scaling group in private-app subnets whose instances admit the app port from the load
# balancer only, a target group with the app's health check, the path it claims on the
# balancer's listeners, and the default alarms to the alarm topic.

variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "instances" {
  type = number
}

variable "app_dir" {
  type        = string
  description = "where the app's built program is, in a directory named after the app"
}

variable "lb_security_group_id" {
  type = string
}

variable "listener_arns" {
  type = list(string)
}

variable "priority" {
  type    = number
  default = 110
}

variable "port" {
  type    = number
  default = 8080
}

variable "environment" {
  type        = map(string)
  default     = {}
  description = "what each instance starts with besides the VPC name, group and port"
}

variable "secrets" {
  type        = map(string)
  default     = {}
  sensitive   = true
  description = "environment variables kept sealed until an instance starts (kmscrypt:: values or sensitive ones)"
}

variable "health_check_interval" {
  type    = number
  default = 10
}

variable "topic_id" {
  type = string
}

resource "image" "app" {
  name       = var.name
  source     = "${var.app_dir}/${var.name}"
  entrypoint = ["./${var.name}"]
  # Rebuilt every night; a rebuild whose files changed rolls out.
  auto_update = "0 3 * * *"
}

resource "security_group" "app" {
  vpc_id = var.vpc_id
  ingress {
    protocol        = "tcp"
    from_port       = var.port
    to_port         = var.port
    security_groups = [var.lb_security_group_id]
  }
  egress {
    protocol    = "all"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "target_group" "app" {
  name                 = var.name
  port                 = var.port
  deregistration_delay = 5
  health_check {
    path                = "/${var.name}/health"
    interval            = var.health_check_interval
    timeout             = min(3, var.health_check_interval / 2)
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "launch_template" "app" {
  name              = var.name
  image_id          = image.app.id
  cpu               = 0.5
  memory            = 128
  port              = var.port
  health_check_path = "/${var.name}/health"
  environment       = var.environment
  secrets           = var.secrets
}

resource "autoscaling_group" "app" {
  name                    = var.name
  launch_template         = launch_template.app.id
  launch_template_version = launch_template.app.latest_version
  subnets                 = var.subnet_ids
  security_groups         = [security_group.app.id]
  min_size                = 1
  max_size                = var.instances * 2
  desired_capacity        = var.instances
  health_check_type       = "lb"
  target_group_arns       = [target_group.app.arn]
  instance_refresh {
    min_healthy_percentage = 100
    timeout                = 120
  }
}

resource "listener_rule" "app" {
  count        = length(var.listener_arns)
  listener_arn = var.listener_arns[count.index]
  priority     = var.priority
  condition {
    path_pattern {
      values = ["/${var.name}*"]
    }
  }
  action {
    type             = "forward"
    target_group_arn = target_group.app.arn
  }
}

module "alarms" {
  source             = "../alarms"
  name               = var.name
  labels             = { group = var.name }
  topic_id           = var.topic_id
  cpu_metric         = "instance_cpu_percent"
  memory_free_metric = "instance_memory_free_bytes"
  disk_free_metric   = "instance_disk_free_bytes"
}

output "group_name" {
  value = autoscaling_group.app.name
}

output "security_group_id" {
  value = security_group.app.id
}
