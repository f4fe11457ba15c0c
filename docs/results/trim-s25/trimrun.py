import ctypes, os, runpy, sys
if os.environ.get("TRIM"):
    assert ctypes.CDLL(None).mallopt(-1, int(os.environ["TRIM"])) == 1
sys.argv = ["banded_block_time.py"] + sys.argv[1:]
runpy.run_path("scripts/banded_block_time.py", run_name="__main__")
