"""steppo: the StepPO reference trainer for stepgym environments.

Step-level GAE and a step-level importance ratio (see docs/algorithm.md), with token-PPO,
GRPO, RLOO, REINFORCE++, GSPO and GiGPO baselines on the same rollouts. Needs the
``train`` extra: ``pip install "stepgym[train]"``.
"""

__all__: list[str] = []
