"""TNG catalogue readers: physical FIELDS of subhalos and groups for the extract stage.

- :class:`Subhalo` (FoF + SubFind), :class:`SubhaloStellar` (+ stellar assembly, merger
  history, SubLink root descendants), :class:`Group` (halos + TNG-Cluster CCcriteria);
- :mod:`TNG.fields`: the registry of FIELDS (names, units, raw inputs);
- :mod:`TNG.groupcat`: chunk-wise group-catalogue reader; :mod:`TNG.conversions`: units.
"""
from TNG.cccriteria import CCCriteria
from TNG.fields import FIELDS, UnknownFieldError, available_fields, describe
from TNG.group import Group
from TNG.groupcat import GroupCatalogue, Header
from TNG.subhalo import Subhalo, SubhaloStellar

__all__ = ["CCCriteria", "FIELDS", "Group", "GroupCatalogue", "Header", "Subhalo",
           "SubhaloStellar", "UnknownFieldError", "available_fields", "describe"]
