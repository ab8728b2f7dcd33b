"""segfactory.search"""
