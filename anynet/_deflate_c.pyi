# anynet._deflate_c is anynet/_deflate.py compiled: the same interface.
from anynet._deflate import DEFAULT_LEVEL as DEFAULT_LEVEL
from anynet._deflate import Deflater as Deflater
from anynet._deflate import Inflater as Inflater
from anynet._deflate import mem_level_for as mem_level_for
