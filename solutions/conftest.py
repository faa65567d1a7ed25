"""nbval runs these notebooks as tests: a failed exercise check must fail the test, not just print ✘.

Set before the first notebook's kernel starts, which inherits it (see ``course_utils.checks._core.strict_checks``).
"""
import os

os.environ["KD_COURSE_STRICT_CHECKS"] = "1"
