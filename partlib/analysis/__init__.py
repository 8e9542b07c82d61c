"""partlib.analysis"""
