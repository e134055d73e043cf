"""pytest settings for the notebook run (nbval): the smoke profile, no progress bars."""

import os

# The kernels nbval starts inherit this process's environment.
os.environ["LABKIT_PROFILE"] = "smoke"
os.environ["TQDM_DISABLE"] = "1"
