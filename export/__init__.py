"""segfactory.export"""
