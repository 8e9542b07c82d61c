"""partlib.models"""
