"""partlib.features"""
