"""pyfastgrad placeholder"""
