"""Term operations around the classroom program: pull-request preview comments, changed-stack detection."""
