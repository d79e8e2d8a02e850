"""Alanine dipeptide (ACE-ALA-NME, 22 atoms) with Amber ff99SB-ILDN: the molecule, its
Z-matrix, the force field, and the study built on them (data, training, evaluation, MD).

Torch-free modules: molecule, zmatrix, forcefield.  The others import torch.
"""
