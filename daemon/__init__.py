"""What the controller and agent daemons share: strict config files and logging."""
