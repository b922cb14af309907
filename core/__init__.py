"""The bottom layer, importing no other package of the product: settings, logging, errors, the
clock, the fault probe and the WindowSet type."""
