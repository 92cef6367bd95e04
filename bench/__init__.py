"""The vzfs benchmark suite: vzfs figures beside their peers', measured in one run (`bench/run`)."""
