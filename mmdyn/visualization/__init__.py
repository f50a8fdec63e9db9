from .dynamic_visualizer import DynamicVisualizer, map_to_image

__all__ = ['DynamicVisualizer', 'map_to_image']
