"""Plot pieces the study's reports share (matplotlib, Agg backend)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import numpy as np  # noqa: E402


def ramachandran_panel(ax, phi, psi, title: str, weights=None, bins: int = 60) -> None:
    """A log-scaled phi/psi histogram (degrees) on `ax`; `weights` are Boltzmann weights of
    reweighted frames (rescaled to mean 1 so empty-looking bins stay empty)."""
    if len(phi):
        w = np.ones(len(phi)) if weights is None else np.asarray(weights) * len(phi) / np.sum(weights)
        ax.hist2d(np.degrees(phi), np.degrees(psi), bins=bins, range=[[-180, 180], [-180, 180]], weights=w,
                  cmin=0.5, cmap="viridis", norm=matplotlib.colors.LogNorm())
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("phi (degrees)")
    ax.set_ylabel("psi (degrees)")
