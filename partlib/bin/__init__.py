"""partlib.bin"""
