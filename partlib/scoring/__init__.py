"""partlib.scoring"""
