"""partlib.data"""
