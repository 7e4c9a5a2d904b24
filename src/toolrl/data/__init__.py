"""Data IO: readers for the formats data ships in (verl parquet, JSONL, JSON, Hugging Face ids), column mapping,
statistics, contamination checks, format conversion and ReTool's cold-start SFT construction.

Importing this package is cheap: pyarrow and ``datasets`` load only when a file of that kind is read.
"""

from toolrl.data.columns import ColumnMap, ColumnOverrides, detect_columns
from toolrl.data.readers import ProblemSet, RowSet, load_problem_set, read_rows, to_problems
from toolrl.data.repeats import RepeatReport, merge_repeats

__all__ = ["ColumnMap", "ColumnOverrides", "detect_columns", "ProblemSet", "RowSet", "load_problem_set", "read_rows",
           "to_problems", "RepeatReport", "merge_repeats"]
