"""A hall's own consumer (role ``hall``) and what the centre keeps of it: docs/hall-autonomy.md."""
