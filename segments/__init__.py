"""People, devices and events, and the segment query language that selects among them."""
