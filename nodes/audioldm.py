"""(being written)"""

NODES = []
