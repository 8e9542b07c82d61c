"""partlib.train"""
