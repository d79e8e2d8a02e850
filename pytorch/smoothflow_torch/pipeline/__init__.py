"""One pipeline from a structure to a flow MD potential, for any small molecule.

    from smoothflow_torch import pipeline
    project = pipeline.prepare("molecule.pdb", "myproject")      # topology, Z-matrix, train.json
    pipeline.simulate(project, ns=20, chains=6, bias="phi", bias_ns=10)
    pipeline.train(project)                                      # stages of train.json
    pipeline.evaluate(project)                                   # evaluation/report.md
    pipeline.md(project)                                         # md/report.md

The same steps on the command line: ``smoothflow prepare|simulate|train|evaluate|md`` (or
``python -m smoothflow_torch.pipeline``); docs/pipeline.md describes each step and its files.

Modules: project (the folder, prepare), simulate (OpenMM data, resumable, torsion bias),
hot_frames (the force field at 1000-2000 K, for the curvature bound), hot_md (a flow in a
1000-2000 K bath: does it hold the molecule together?), data
(frames and weights), model (the flow of a config), train (stages), weights (importance-weight
statistics), evaluate, md (energy conservation), cli.
"""
from .project import Project, prepare
from .simulate import simulate
from .train import train, default_config, export_checkpoint
from .evaluate import evaluate
from .md import md
from .hot_frames import hot_frames
from .hot_md import hot_md

__all__ = ["Project", "prepare", "simulate", "hot_frames", "hot_md", "train", "default_config", "export_checkpoint", "evaluate", "md"]
