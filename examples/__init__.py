"""Example workflows, one folder each: the flagship order fulfilment (the CLI's default
app) and the notification step added to it in both modes."""
