"""partlib.infer"""
