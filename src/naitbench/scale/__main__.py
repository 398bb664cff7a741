"""`python -m naitbench.scale hydra/launcher=joblib [hydra.launcher.n_jobs=N] [scale.gpus=N]`:
run the matrix's pending train and evaluate cells through a Hydra launcher (conf/scale.yaml)."""

import hydra

from naitbench.config import CONF_DIR
from naitbench.scale.job import run_cell

main = hydra.main(config_path=str(CONF_DIR), config_name="scale", version_base=None)(run_cell)

if __name__ == "__main__":
    main()
