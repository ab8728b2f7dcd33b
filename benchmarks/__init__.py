"""segfactory.benchmarks"""
