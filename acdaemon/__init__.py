"""What the controller and agent daemons share: strict config files, logging, signals, systemd notify, metrics."""
