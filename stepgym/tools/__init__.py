"""Tools that envs offer to agents: the Tool protocol and built-in tools."""

from stepgym.tools.base import Tool, ToolOutput, describe_tools, validate_arguments

__all__ = ["Tool", "ToolOutput", "describe_tools", "validate_arguments"]
