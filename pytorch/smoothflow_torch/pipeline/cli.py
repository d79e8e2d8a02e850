"""The ``smoothflow`` command: prepare, simulate, train, evaluate, md (and hot-md, hot-frames, weights)."""
from __future__ import annotations

import argparse
import json
import sys

DESCRIPTION = """\
Make a smooth normalizing flow of one small molecule and use it as an MD potential.

A project is a folder. The five steps, in order:

  smoothflow prepare molecule.pdb myproject     structure + force field -> topology, Z-matrix, train.json
  smoothflow simulate myproject --ns 20         training data: Langevin MD with the force field
  smoothflow train myproject                    fit the flow (stages of myproject/train.json)
  smoothflow evaluate myproject                 held-out NLL, force RMSE, ESS/n, free energies -> report
  smoothflow md myproject                       energy conservation in NVE, flow vs force field -> report

Every step can be rerun: simulate and train continue where they stopped. Two more, for a flow
that must hold at high temperature: `smoothflow hot-md myproject model.safetensors` runs the
flow in a 1000 and a 2000 K bath and says whether it holds the molecule together, and
`smoothflow hot-frames myproject` samples the force field at 1000-2000 K for the training's
curvature bound (train configs' data.curvature_frames). `smoothflow weights myproject
model.safetensors` pools the importance weights of 10 x 10^5 flow samples (resumable): ESS/n,
k-hat and the heaviest samples, as a reviewer asks for them.
`smoothflow STEP --help` describes a step; docs/pipeline.md has an example session.
"""

EPILOGS = {
    "prepare": """\
The structure must be one molecule with all its hydrogens (or pass --add-hydrogens), in names
the force field knows (OpenMM's standard PDB names; PDBFile renames common variants). Residues
OpenMM does not know need CONECT records. Explicit water is not supported: the flow describes
one molecule, in vacuum or implicit solvent (give the implicit-solvent XML, as the default does).

Writes PROJECT/project.json, topology.pdb, zmatrix.txt (the internal coordinates the flow uses,
one line per atom) and train.json (the training schedule; edit it before `smoothflow train`).
A peptide's phi, psi and omega are found by themselves; --torsion adds others for plots and the
bias, e.g. --torsion "SER2:N SER2:CA SER2:CB SER2:OG" (RESNAME<number>:ATOM, as in zmatrix.txt).
""",
    "simulate": """\
Each chain: minimize the structure, draw velocities, equilibrate, then save a frame every
--interval-ps for --ns nanoseconds (20 % held out for evaluation: the end of each chain).
Rerunning continues each chain and appends; a larger --ns or --chains extends the data.

Rare conformations (e.g. phi > 0 of a dipeptide: about once per 100 ns) need the bias: --bias
phi --bias-ns 10 runs 10 ns of metadynamics along phi, freezes the bias and runs the chains
under it; every frame then carries its exact Boltzmann weight and all later averages use it.
Several torsions (--bias phi:ALA2 --bias phi:ALA3 --bias phi:ALA4, or --bias
phi:ALA2,phi:ALA3,phi:ALA4) get one metadynamics run each (in parallel with --jobs) and the
chains run under the sum of the frozen tables; the weights stay exact.

Writes PROJECT/data/frames.npz (positions, forces, energies, bias), data/summary.json.
Cost: alanine dipeptide in implicit solvent runs about 50 ns per hour per core.
""",
    "train": """\
CONFIG (default PROJECT/train.json) is a training run or {"stages": [...]}: each stage starts
from the previous stage's settings and model. Each stage writes PROJECT/runs/<name>/ (log.jsonl,
checkpoints, model.safetensors, summary.json); a rerun resumes from the newest checkpoint and
skips finished stages. The last stage's flow is copied to PROJECT/model.safetensors, the file
that openmmsmoothflow.addSmoothFlowForce and openmm-ml's MLPotential('smoothflow') load.
While a training runs (or after it was stopped), --export-checkpoint MODEL writes the stage in
progress as of its newest checkpoint to MODEL, marked unfinished, without training.
""",
    "hot-md": """\
For each temperature and seed, Langevin dynamics (friction 1/ps) with the flow as the only
force (--force-field instead of a model: the project's force field, the baseline), from a
held-out frame, then velocity Verlet from its last state. Reports per run the
kinetic temperature (mean and per tenth), the longest bond over the longest held-out one, the
Z-matrix angles reached, how close implied angles under torsions come to 0/180 degrees (a
folding amide), the wall count and any failure, and whether the run holds (no failure, mean
kinetic temperature within 10 % of the bath, no bond beyond 1.5x, and a velocity Verlet run
that neither fails nor heats past 5 times the bath). Writes PROJECT/hot_md/
hot_md.md and hot_md.json. Cost: alanine dipeptide, 100 ps at 1 fs on the CPU platform, about
a minute per run.
""",
    "hot-frames": """\
For each temperature, --starts Langevin runs with the force field (its own masses, friction
1/ps) from Boltzmann-spread training frames save a frame every --interval-ps for --ps. A train
config's data.curvature_frames ("data/hot_frames.npz") makes the curvature bound visit these
frames too (curvature_extra_batch of them per step): a flow trained at 300 K has no constraint
off its data, where hot runs go. They never enter the likelihood; as data.force_matching_frames
(with force_matching_extra_batch) force matching visits them too, against their forces.
--model runs a flow instead of the force field (at a time step where it holds, e.g. 0.5 fs):
the frames are then where that flow goes. A run that fails (non-finite, an error, or kinetic
temperature above 5x the bath) keeps its frames until then and is listed under "failures".
--verlet runs velocity Verlet without a bath (the md study's NVE) from velocities at each
temperature: with --model and the md study's step (e.g. --temperatures 300 --dt-fs 2) the frames
are where the flow's own NVE runs go, which a long step stretches beyond Langevin's; such a run
stops (and is listed) once its kinetic temperature passes twice the starting one.

Writes PROJECT/data/hot_frames.npz (positions, forces, energies, temperature, start, time_ps)
and hot_frames.json (settings; per temperature the mean kinetic temperature and the longest
bond over the longest in the training data). Cost: alanine dipeptide, the defaults (3 x 4 x
50 ps at 0.5 fs), a few minutes on the CPU platform.
""",
    "evaluate": """\
Writes PROJECT/evaluation/report.md with held-out NLL, force RMSE against the force field,
ESS/n of flow samples reweighted to the force field (with a bootstrap interval and the Pareto
k-hat of the weights), free-energy profiles along the torsions of interest and, for a peptide,
Ramachandran plots (PNG files beside the report), and evaluation.json with every number.
""",
    "weights": """\
Draws --seeds independent sets of --samples flow samples per model, reweights them to the force
field and pools them: ESS/n over the union and per set, the PSIS k-hat (below 0.5 good, 0.7 or
more unreliable), the largest weights with their torsions and energies, and the reweighted
fraction of the first torsion of interest (a peptide's first phi) > 0 against the MD's. Each
set is saved under PROJECT/evaluation_sets/ when complete, so an interrupted run resumes.
Writes PROJECT/evaluation/importance_weights.md and .json. Cost, measured on one core with the
force-field energies: alanine dipeptide's smooth flow 0.75 ms per sample, the tetrapeptide's 2.7
ms (sampling a density-direction flow needs a root-finding inverse), so 10 x 10^5 samples take
13-45 minutes.
""",
    "md": """\
NVE velocity Verlet from the same held-out starts and velocities with the flow alone and with
the force field, at each --dt-fs. Reports the fluctuation ratio RMS(dE_tot)/RMS(dE_kin) (small
is good; it grows as dt^2 for a smooth potential), the energy drift, failed runs and the flow's
ratio over the force field's. Writes PROJECT/md/report.md, results.json and PNG plots.
""",
}


def _parser() -> argparse.ArgumentParser:
    from .project import DEFAULT_FORCEFIELD, DEFAULT_TEMPERATURE
    ap = argparse.ArgumentParser(prog="smoothflow", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="STEP")

    def add(name, help):
        return sub.add_parser(name, help=help, description=help, epilog=EPILOGS[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("prepare", "structure + force field -> a project folder")
    p.add_argument("structure", help="PDB or PDBx/mmCIF file of one molecule")
    p.add_argument("project", help="folder to create")
    p.add_argument("--forcefield", nargs="+", default=list(DEFAULT_FORCEFIELD), metavar="XML",
                   help="OpenMM force-field files (default: %(default)s, i.e. Amber ff99SB-ILDN with OBC "
                        "implicit solvent; only the first for vacuum)")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="kelvin (default %(default)s)")
    p.add_argument("--torsion", action="append", default=[], metavar="ATOMS",
                   help="a torsion of interest by four atoms, e.g. 'SER2:N SER2:CA SER2:CB SER2:OG' (repeatable)")
    p.add_argument("--add-hydrogens", action="store_true", help="add missing hydrogens (pH 7) with Modeller")
    p.add_argument("--name", help="label in reports (default: the structure's file name)")
    p.add_argument("--zmatrix", metavar="FILE",
                   help="use this Z-matrix (JSON rows or four integers per line, 0-based atom indices, -1 where "
                        "unused) instead of building one")
    p.add_argument("--overwrite", action="store_true", help="replace an existing project.json and train.json")

    p = add("simulate", "training data by Langevin MD with the force field (resumable)")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("--ns", type=float, default=1.0, help="production per chain in ns (default %(default)s)")
    p.add_argument("--chains", type=int, default=1, help="independent chains (default %(default)s)")
    p.add_argument("--interval-ps", type=float, default=1.0, help="ps between saved frames (default %(default)s)")
    p.add_argument("--dt-fs", type=float, default=2.0, help="time step in fs (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=100.0, help="before the first frame (default %(default)s)")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction per ps (default %(default)s)")
    p.add_argument("--hydrogen-mass", type=float, default=3.0,
                   help="hydrogen mass in amu for 2 fs steps without constraints (0: unchanged; default %(default)s)")
    p.add_argument("--seed", type=int, default=1000, help="chain c uses seed + c (default %(default)s)")
    p.add_argument("--bias", metavar="TORSION", action="append",
                   help="bias along a torsion: 'phi', 'psi:SER2', or four atoms 'ACE1:C SER2:N SER2:CA SER2:C'; "
                        "repeat it (or give names separated by commas, 'phi:ALA2,phi:ALA3') to bias several: "
                        "the bias is then the sum of one table per torsion")
    p.add_argument("--bias-ns", type=float, default=0.0,
                   help="ns of metadynamics along each biased torsion that build its table (e.g. 10)")
    p.add_argument("--checkpoint-ps", type=float, default=100.0, help="save progress this often (default %(default)s)")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (default %(default)s)")
    p.add_argument("--jobs", type=int, default=1, help="chains run in parallel (default %(default)s)")
    p.add_argument("--restart", action="store_true", help="delete the project's data and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = add("train", "fit the flow to the data (stages, checkpoints, resumable)")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("config", nargs="?", help="config file (default PROJECT/train.json)")
    p.add_argument("--iterations", type=int, help="override every stage's iterations (a quick try)")
    p.add_argument("--restart", action="store_true", help="ignore and delete existing checkpoints")
    p.add_argument("--stop-at", type=int, help="stop the current stage after this many updates (checkpointed)")
    p.add_argument("--max-minutes", type=float, help="stop (checkpointed) after this long")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export-checkpoint", metavar="MODEL",
                   help="train nothing: write the newest checkpoint of the stage in progress as an interim model "
                        "file MODEL (to run or evaluate a training before it finishes)")

    p = add("hot-frames", "force-field frames at 1000-2000 K for the curvature bound in training")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1000.0, 1500.0, 2000.0],
                   help="bath temperatures in K (default %(default)s)")
    p.add_argument("--ps", type=float, default=50.0, help="production per run in ps (default %(default)s)")
    p.add_argument("--starts", type=int, default=4, help="runs per temperature (default %(default)s)")
    p.add_argument("--interval-ps", type=float, default=0.1, help="ps between saved frames (default %(default)s)")
    p.add_argument("--dt-fs", type=float, default=0.5, help="time step in fs (default %(default)s)")
    p.add_argument("--equilibration-ps", type=float, default=2.0, help="before the first frame (default %(default)s)")
    p.add_argument("--seed", type=int, default=2000)
    p.add_argument("--frames", metavar="NPZ", help="training frames to start from (default PROJECT/data/frames.npz)")
    p.add_argument("--out", metavar="NPZ", help="file to write (default PROJECT/data/hot_frames.npz)")
    p.add_argument("--model", metavar="MODEL",
                   help="run this flow alone as the potential instead of the force field: frames where the flow "
                        "itself goes when hot (they keep the force field's energies and forces)")
    p.add_argument("--verlet", action="store_true",
                   help="velocity Verlet without a bath (NVE) instead of Langevin dynamics")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("hot-md", "does a flow hold the molecule together at 1000-2000 K? (Langevin, then NVE)")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("model", nargs="?", help="the flow's model file (none with --force-field)")
    p.add_argument("--force-field", action="store_true",
                   help="run the project's force field instead of a model: the baseline")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1000.0, 2000.0],
                   help="bath temperatures in K (default %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="one run per seed and temperature (default %(default)s)")
    p.add_argument("--ps", type=float, default=100.0, help="Langevin run length (default %(default)s)")
    p.add_argument("--dt-fs", type=float, default=1.0, help="Langevin time step in fs (default %(default)s)")
    p.add_argument("--nve-ps", type=float, default=2.0, help="velocity Verlet after each run that held; 0: none "
                                                               "(default %(default)s)")
    p.add_argument("--nve-dt-fs", type=float, default=2.0, help="its time step (default %(default)s)")
    p.add_argument("--hydrogen-mass", type=float,
                   help="repartition: each hydrogen this many amu, taken from its heavy atom (default: unchanged)")
    p.add_argument("--frames", metavar="NPZ",
                   help="held-out frames for the start and the bond reference (default PROJECT/data/frames.npz)")
    p.add_argument("--start", type=int, default=0, help="the held-out frame to start from (default %(default)s)")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (default %(default)s)")
    p.add_argument("--out", help="folder for the report (default PROJECT/hot_md)")

    p = add("evaluate", "held-out NLL, force RMSE, ESS/n, free energies: a report")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("models", nargs="*", help="model files (default PROJECT/model.safetensors)")
    p.add_argument("--samples", type=int, default=2000, help="flow samples per set (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="independent sample sets, pooled (default %(default)s)")
    p.add_argument("--bins", type=int, default=36, help="histogram bins over 360 degrees (default %(default)s)")
    p.add_argument("--out", help="folder for the report (default PROJECT/evaluation)")
    p.add_argument("--frames", metavar="NPZ",
                   help="a frames file to evaluate on instead of PROJECT/data/frames.npz (e.g. data kept elsewhere)")

    p = add("weights", "importance weights pooled over many sample sets: ESS/n, k-hat, heaviest samples")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("models", nargs="*", help="model files (default PROJECT/model.safetensors)")
    p.add_argument("--samples", type=int, default=100000, help="flow samples per set (default %(default)s)")
    p.add_argument("--seeds", type=int, default=10, help="independent sets (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the first set's seed (default %(default)s)")
    p.add_argument("--batch", type=int, default=2000, help="samples per flow call; fixes the draws (default "
                                                           "%(default)s)")
    p.add_argument("--sets", help="folder of saved sets (default PROJECT/evaluation_sets)")
    p.add_argument("--out", help="folder for the report (default PROJECT/evaluation)")
    p.add_argument("--frames", metavar="NPZ", help="frames file for the MD reference fraction (default "
                                                   "PROJECT/data/frames.npz)")

    p = add("md", "energy conservation in NVE: flow against force field")
    p.add_argument("project", help="the project folder (made by prepare)")
    p.add_argument("models", nargs="*", help="model files (default PROJECT/model.safetensors)")
    p.add_argument("--dt-fs", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0], help="time steps (fs)")
    p.add_argument("--ps", type=float, default=10.0, help="length of each run (default %(default)s)")
    p.add_argument("--starts", type=int, default=4, help="starting frames (default %(default)s)")
    p.add_argument("--samples", type=int, default=400, help="energy samples per run (default %(default)s)")
    p.add_argument("--starts-from", metavar="NPZ",
                   help="take the starts evenly spaced from this file's 'positions' (Boltzmann-distributed frames) "
                        "instead of the project's held-out data")
    p.add_argument("--frames", metavar="NPZ",
                   help="take the held-out starts from this frames file instead of PROJECT/data/frames.npz")
    p.add_argument("--platform", default="Reference")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (default %(default)s)")
    p.add_argument("--out", help="folder for the report (default PROJECT/md)")
    p.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None):
    args = _parser().parse_args(argv)
    from . import evaluate, md, prepare, simulate, train
    from .hot_frames import hot_frames
    from .hot_md import hot_md
    from .train import export_checkpoint
    try:
        if args.command == "prepare":
            project = prepare(args.structure, args.project, forcefield=args.forcefield, temperature=args.temperature,
                              torsions=args.torsion, add_hydrogens=args.add_hydrogens, name=args.name,
                              overwrite=args.overwrite, zmatrix=args.zmatrix)
            print(f"{args.project}: {project.n_atoms} atoms, {3 * project.n_atoms - 6} flow dimensions; torsions of "
                  f"interest: {', '.join(t['name'] for t in project.torsions) or 'none'}. Next: smoothflow simulate "
                  f"{args.project}")
        elif args.command == "simulate":
            summary = simulate(args.project, ns=args.ns, chains=args.chains, interval_ps=args.interval_ps,
                               dt_fs=args.dt_fs, equilibration_ps=args.equilibration_ps, friction=args.friction,
                               hydrogen_mass=args.hydrogen_mass, seed=args.seed, bias=args.bias, bias_ns=args.bias_ns,
                               checkpoint_ps=args.checkpoint_ps, platform=args.platform, jobs=args.jobs,
                               restart=args.restart, progress=not args.no_progress)
            print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
        elif args.command == "train" and args.export_checkpoint:
            export_checkpoint(args.project, args.config, args.export_checkpoint)
        elif args.command == "train":
            summaries = train(args.project, args.config, iterations=args.iterations, restart=args.restart,
                              stop_at=args.stop_at, max_minutes=args.max_minutes, threads=args.threads,
                              progress=False if args.no_progress else None)
            for s in summaries:
                print(json.dumps({"name": s["name"], "completed": s["completed"], "steps": s["steps"],
                                  "final_eval": s["final_eval"]}))
        elif args.command == "hot-frames":
            summary = hot_frames(args.project, temperatures=args.temperatures, ps=args.ps, starts=args.starts,
                                 interval_ps=args.interval_ps, dt_fs=args.dt_fs,
                                 equilibration_ps=args.equilibration_ps, seed=args.seed, platform=args.platform,
                                 frames=args.frames, out=args.out, model=args.model, verlet=args.verlet,
                                 progress=not args.no_progress)
            print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
        elif args.command == "hot-md":
            hot_md(args.project, args.model, temperatures=args.temperatures, seeds=args.seeds, ps=args.ps,
                   dt_fs=args.dt_fs, nve_ps=args.nve_ps, nve_dt_fs=args.nve_dt_fs,
                   hydrogen_mass=args.hydrogen_mass, platform=args.platform, frames=args.frames,
                   start=args.start, out=args.out, force_field=args.force_field, log=sys.stdout)
            print((_out(args, "hot_md") / "hot_md.md").read_text())
        elif args.command == "evaluate":
            evaluate(args.project, args.models or None, samples=args.samples, seed=args.seed, seeds=args.seeds,
                     bins=args.bins, out=args.out, frames=args.frames)
            print((_out(args, "evaluation") / "report.md").read_text())
        elif args.command == "weights":
            from .importance import importance_weights
            importance_weights(args.project, args.models or None, samples=args.samples, seeds=args.seeds,
                               seed=args.seed, out=args.out, sets=args.sets, batch=args.batch, frames=args.frames)
            print((_out(args, "evaluation") / "importance_weights.md").read_text())
        elif args.command == "md":
            md(args.project, args.models or None, dt_fs=args.dt_fs, ps=args.ps, starts=args.starts,
               samples=args.samples, platform=args.platform, jobs=args.jobs, out=args.out,
               progress=not args.no_progress, starts_from=args.starts_from, frames=args.frames)
            print((_out(args, "md") / "report.md").read_text())
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"smoothflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _out(args, default: str):
    from pathlib import Path
    return Path(args.out) if args.out else Path(args.project) / default
